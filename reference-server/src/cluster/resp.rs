//! A minimal Redis client: RESP2 requests and replies over any byte stream.
//!
//! Ours rather than the `redis` crate because it runs over whatever stream it is given
//! — a tokio `TcpStream` live, a turmoil `TcpStream` in the simulator — and because the
//! backplane needs five commands, not a client library. Every reply is bounded
//! ([`REPLY_BYTES_MAX`]): a confused or hostile peer cannot make a node allocate
//! without limit.

use std::io;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

/// A reply, as RESP2 gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    /// A bulk string; `None` is RESP's nil.
    Bulk(Option<Vec<u8>>),
    /// An array; `None` is RESP's nil array.
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The reply as text (a simple or bulk string), if it is one.
    pub fn text(&self) -> Option<String> {
        match self {
            Reply::Simple(s) => Some(s.clone()),
            Reply::Bulk(Some(b)) => String::from_utf8(b.clone()).ok(),
            _ => None,
        }
    }

    pub fn int(&self) -> Option<i64> {
        match self {
            Reply::Int(n) => Some(*n),
            _ => None,
        }
    }

    pub fn items(&self) -> &[Reply] {
        match self {
            Reply::Array(Some(v)) => v,
            _ => &[],
        }
    }
}

/// One reply (all its nested parts together) at most this large. The largest the
/// backplane reads is one page of a workspace's stream (`XRANGE … COUNT`).
pub const REPLY_BYTES_MAX: usize = 256 << 20;
/// Nesting depth of a reply at most (ours are at most three deep).
const DEPTH_MAX: usize = 8;

/// One connection to Redis. Requests are sent and answered one at a time.
pub struct Conn<S> {
    io: BufReader<S>,
}

impl<S> std::fmt::Debug for Conn<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("resp::Conn")
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Conn<S> {
    pub fn new(stream: S) -> Self {
        Conn {
            io: BufReader::new(stream),
        }
    }

    /// Sends one command and reads its reply. An `Error` reply is returned as a reply,
    /// not an `Err`: `Err` means the connection is no longer usable.
    pub async fn call(&mut self, args: &[&[u8]]) -> io::Result<Reply> {
        let mut req = Vec::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
        encode(&mut req, args);
        self.io.get_mut().write_all(&req).await?;
        self.io.get_mut().flush().await?;
        let mut budget = REPLY_BYTES_MAX;
        read_reply(&mut self.io, &mut budget, 0).await
    }
}

/// A command as a RESP array of bulk strings.
pub fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

fn bad(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.into())
}

async fn read_line<S: AsyncRead + Unpin>(
    io: &mut BufReader<S>,
    budget: &mut usize,
) -> io::Result<String> {
    let mut line = Vec::new();
    // A line is a type byte and a number or a short status: 4 KiB is generous.
    let n = (&mut *io).take(4096).read_until(b'\n', &mut line).await?;
    if n == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    if !line.ends_with(b"\r\n") {
        return Err(bad("RESP line without CRLF (or longer than 4 KiB)"));
    }
    *budget = budget
        .checked_sub(n)
        .ok_or_else(|| bad("reply over the size bound"))?;
    line.truncate(line.len() - 2);
    String::from_utf8(line).map_err(|_| bad("RESP line is not UTF-8"))
}

fn number(s: &str) -> io::Result<i64> {
    s.parse()
        .map_err(|_| bad(format!("RESP length or integer {s:?}")))
}

fn read_reply<'a, S: AsyncRead + Unpin + Send>(
    io: &'a mut BufReader<S>,
    budget: &'a mut usize,
    depth: usize,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = io::Result<Reply>> + Send + 'a>> {
    Box::pin(async move {
        if depth > DEPTH_MAX {
            return Err(bad("reply nested too deep"));
        }
        let line = read_line(io, budget).await?;
        let (kind, rest) = line.split_at(line.len().min(1));
        Ok(match kind {
            "+" => Reply::Simple(rest.to_owned()),
            "-" => Reply::Error(rest.to_owned()),
            ":" => Reply::Int(number(rest)?),
            "$" => {
                let len = number(rest)?;
                if len < 0 {
                    return Ok(Reply::Bulk(None));
                }
                let len = len as usize;
                *budget = budget
                    .checked_sub(len + 2)
                    .ok_or_else(|| bad("reply over the size bound"))?;
                let mut buf = vec![0; len + 2];
                io.read_exact(&mut buf).await?;
                if !buf.ends_with(b"\r\n") {
                    return Err(bad("bulk string without CRLF"));
                }
                buf.truncate(len);
                Reply::Bulk(Some(buf))
            }
            "*" => {
                let len = number(rest)?;
                if len < 0 {
                    return Ok(Reply::Array(None));
                }
                // Each element takes at least 3 bytes on the wire.
                if len as usize > *budget / 3 {
                    return Err(bad("reply over the size bound"));
                }
                let mut items = Vec::with_capacity(len as usize);
                for _ in 0..len {
                    items.push(read_reply(io, budget, depth + 1).await?);
                }
                Reply::Array(Some(items))
            }
            other => return Err(bad(format!("unknown RESP type {other:?}"))),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(bytes: &[u8]) -> io::Result<Reply> {
        let mut io = BufReader::new(bytes);
        let mut budget = 1024;
        read_reply(&mut io, &mut budget, 0).await
    }

    #[tokio::test]
    async fn replies_decode() {
        assert_eq!(parse(b"+OK\r\n").await.unwrap(), Reply::Simple("OK".into()));
        assert_eq!(
            parse(b"-ERR x\r\n").await.unwrap(),
            Reply::Error("ERR x".into())
        );
        assert_eq!(parse(b":-7\r\n").await.unwrap(), Reply::Int(-7));
        assert_eq!(parse(b"$-1\r\n").await.unwrap(), Reply::Bulk(None));
        assert_eq!(
            parse(b"*2\r\n$3\r\na\r\n\r\n*-1\r\n").await.unwrap(),
            Reply::Array(Some(vec![
                Reply::Bulk(Some(b"a\r\n".to_vec())),
                Reply::Array(None)
            ]))
        );
    }

    #[tokio::test]
    async fn hostile_replies_are_refused_not_allocated() {
        // A bulk string claiming more than the budget, an array of a billion items,
        // nesting past the bound, an unknown type, a line with no end.
        assert!(parse(b"$999999999\r\n").await.is_err());
        assert!(parse(b"*1000000000\r\n").await.is_err());
        assert!(parse(&b"*1\r\n".repeat(20)).await.is_err());
        assert!(parse(b"%1\r\n").await.is_err());
        assert!(parse(&[b'+'; 5000]).await.is_err());
    }

    #[test]
    fn commands_encode_as_bulk_arrays() {
        let mut out = Vec::new();
        encode(&mut out, &[b"GET", b"k"]);
        assert_eq!(out, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    }
}
