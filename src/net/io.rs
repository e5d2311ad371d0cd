//! `embedded-io-async` over a smol stream (a TCP socket, or one half of a
//! TLS stream): the protocol side reads and writes through these traits only.

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub struct SmolIo<S>(pub S);

impl<S> embedded_io_async::ErrorType for SmolIo<S> {
    type Error = std::io::Error;
}

impl<S: AsyncRead + Unpin> embedded_io_async::Read for SmolIo<S> {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        self.0.read(buf).await
    }
}

impl<S: AsyncWrite + Unpin> embedded_io_async::Write for SmolIo<S> {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        self.0.write(buf).await
    }

    async fn flush(&mut self) -> Result<(), Self::Error> {
        self.0.flush().await
    }
}
