//! HTTP/1.1 for both sides of the proxy: the server codec clients talk to and the pieces the
//! upstream client shares with it (chunked decoding, head encoding).
//!
//! Why our own codec and not monoio-http's (verified on the wire, DESIGN section 3): its h1 server
//! codec buffers a whole Content-Length body, always re-chunks a streamed response (dropping our
//! Content-Length), sends `content-length: 0` on body-less responses (wrong for HEAD), has no
//! header-size limit and ignores `Expect: 100-continue`; monoio-transports' client reads whole
//! bodies into memory and hangs on HEAD. So heads are parsed with `httparse` and bodies move
//! through monoio's owned-buffer I/O in bounded chunks.

pub mod chunked;
pub mod cors;
pub mod forwarded;
pub mod io;
pub mod path;
pub mod range;
pub mod request;
pub mod response;
pub mod server;
pub mod small;
