//! `embedded-io-async` over smol sockets (a TCP socket, or one half of a
//! TLS stream): the protocol side reads and writes through these traits only.

use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use super::rt::Async;
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub struct SmolIo<S>(pub S);

impl<S> embedded_io_async::ErrorType for SmolIo<S> {
    type Error = io::Error;
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

/// A client's TCP socket, shared by its reader and writer: one pointer per
/// handle.
#[derive(Clone)]
pub struct Tcp(pub Rc<Async<std::net::TcpStream>>);

impl From<super::rt::TcpStream> for Tcp {
    fn from(s: super::rt::TcpStream) -> Tcp {
        Tcp(s.into())
    }
}

impl Tcp {
    pub fn shutdown(&self) {
        let _ = self.0.get_ref().shutdown(std::net::Shutdown::Both);
    }
}

impl AsyncRead for Tcp {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tcp {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self.0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self.0).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self.0).poll_close(cx)
    }
}
