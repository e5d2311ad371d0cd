//! `embedded-io-async` over a smol TCP stream: the protocol side reads and
//! writes through these traits only.

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;

pub struct SmolIo(pub TcpStream);

impl embedded_io_async::ErrorType for SmolIo {
    type Error = std::io::Error;
}

impl embedded_io_async::Read for SmolIo {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        self.0.read(buf).await
    }
}

impl embedded_io_async::Write for SmolIo {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        self.0.write(buf).await
    }

    async fn flush(&mut self) -> Result<(), Self::Error> {
        self.0.flush().await
    }
}
