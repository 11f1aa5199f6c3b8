//! Decoder for the chunked transfer coding (RFC 9112 section 7.1), for request bodies and for
//! upstream S3 responses.
//!
//! Hot path: every chunked body byte passes through [`ChunkedDecoder::decode`]. Chunk data is
//! returned as a sub-slice of the caller's buffer (zero copy); only the framing (size lines,
//! CRLFs, trailers) is walked byte by byte through a state machine that buffers nothing, so the
//! decoder is a few words of state and input may be split at any byte. Cost: O(1) per data run
//! plus O(1) per framing byte. Framing is bounded: a chunk-size line (with extensions) may be at
//! most [`MAX_SIZE_LINE_BYTES`] and the trailer section at most [`MAX_TRAILER_BYTES`].
//!
//! Line endings must be CRLF: a bare LF or CR in the framing is rejected rather than tolerated,
//! because lenient chunk parsing that differs between hops is a request-smuggling vector.

use std::fmt;

/// Longest chunk-size line accepted, in bytes: hex size, chunk extensions and CRLF.
pub const MAX_SIZE_LINE_BYTES: usize = 4096;
/// Most trailer bytes accepted: all trailer field lines with their CRLFs, not counting the
/// empty line that ends the body.
pub const MAX_TRAILER_BYTES: usize = 16 * 1024;

/// Why a chunked body was rejected. Every variant means the message framing is broken: the
/// connection must be closed (a request: 400; an upstream response: 502).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkedError {
    /// The chunk-size is not hexadecimal, is missing, or does not fit in 64 bits.
    InvalidChunkSize,
    /// A chunk-size line longer than [`MAX_SIZE_LINE_BYTES`] or trailers longer than
    /// [`MAX_TRAILER_BYTES`].
    LineTooLong,
    /// A missing or bare CR/LF after chunk data or a line, or a control character in a chunk
    /// extension or trailer field.
    InvalidFraming,
}

impl fmt::Display for ChunkedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChunkedError::InvalidChunkSize => "invalid chunk size",
            ChunkedError::LineTooLong => "chunk framing line too long",
            ChunkedError::InvalidFraming => "invalid chunked framing",
        })
    }
}

impl std::error::Error for ChunkedError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Start of a chunk-size line: a hex digit must follow.
    SizeStart,
    /// Inside the hex chunk-size.
    Size,
    /// Whitespace after the size (BWS): only more whitespace or ';' may follow.
    SizeBws,
    /// Inside chunk extensions, up to the CR.
    Ext,
    /// CR of the chunk-size line seen: LF must follow.
    SizeLf,
    /// Inside chunk data; `remaining` > 0 bytes are left.
    Data,
    /// Chunk data finished: CR must follow.
    DataCr,
    /// CR after chunk data seen: LF must follow.
    DataLf,
    /// After the last-chunk line, at the start of a trailer field line or the final CRLF.
    TrailerStart,
    /// Inside a trailer field line, up to the CR.
    Trailer,
    /// CR of a trailer field line seen: LF must follow.
    TrailerLf,
    /// CR of the final empty line seen: LF must follow.
    EndLf,
    /// The final CRLF was consumed; the body is complete.
    Done,
}

/// Incremental chunked-body decoder (RFC 9112 section 7.1). Chunk extensions are validated and
/// ignored; trailer fields are validated for control characters and discarded.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    /// Chunk-size being parsed (size states) or bytes left in the chunk (`Data`).
    remaining: u64,
    /// Bytes of the current chunk-size line so far.
    line_bytes: usize,
    /// Bytes of the trailer section so far.
    trailer_bytes: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    /// A decoder positioned at the start of a chunked body.
    pub fn new() -> Self {
        ChunkedDecoder {
            state: State::SizeStart,
            remaining: 0,
            line_bytes: 0,
            trailer_bytes: 0,
        }
    }

    /// Decode from `input`.
    ///
    /// Returns `(consumed, data)`: the first `consumed` bytes of `input` were used, and `data` is
    /// a sub-slice of them holding decoded body bytes (possibly empty). One call returns at most
    /// one contiguous data run, so `consumed < input.len()` means "call again with
    /// `&input[consumed..]`", unless [`ChunkedDecoder::is_done`] is true, in which case the rest
    /// of `input` belongs to whatever follows the body (the next pipelined message) and is not
    /// touched. `input` may be split at any byte boundary between calls.
    ///
    /// Errors leave the decoder unusable; the connection must be closed. If a framing error
    /// follows a data run in the same input, the data run is returned first and the error is
    /// reported by the next call.
    pub fn decode<'a>(&mut self, input: &'a [u8]) -> Result<(usize, &'a [u8]), ChunkedError> {
        let mut pos = 0;
        let mut data: &'a [u8] = &[];
        while pos < input.len() {
            match self.state {
                State::Done => break,
                State::Data => {
                    if !data.is_empty() {
                        break;
                    }
                    debug_assert!(self.remaining > 0);
                    let available = input.len() - pos;
                    let take =
                        usize::try_from(self.remaining).map_or(available, |r| r.min(available));
                    data = &input[pos..pos + take];
                    pos += take;
                    self.remaining -= take as u64;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                }
                _ => match self.step(input[pos]) {
                    Ok(()) => pos += 1,
                    Err(e) if data.is_empty() => return Err(e),
                    Err(_) => break,
                },
            }
        }
        debug_assert!(pos <= input.len());
        Ok((pos, data))
    }

    /// True once the last-chunk, the trailer section and the final CRLF were consumed.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Advance over one framing byte. Leaves the state unchanged on error.
    fn step(&mut self, b: u8) -> Result<(), ChunkedError> {
        match self.state {
            State::SizeStart | State::Size => {
                if self.line_bytes >= MAX_SIZE_LINE_BYTES {
                    return Err(ChunkedError::LineTooLong);
                }
                if let Some(digit) = hex_value(b) {
                    if self.remaining > u64::MAX >> 4 {
                        return Err(ChunkedError::InvalidChunkSize);
                    }
                    self.remaining = (self.remaining << 4) | u64::from(digit);
                    self.state = State::Size;
                } else if self.state == State::SizeStart {
                    return Err(ChunkedError::InvalidChunkSize);
                } else {
                    self.state = match b {
                        b'\r' => State::SizeLf,
                        b';' => State::Ext,
                        b' ' | b'\t' => State::SizeBws,
                        b'\n' => return Err(ChunkedError::InvalidFraming),
                        _ => return Err(ChunkedError::InvalidChunkSize),
                    };
                }
                self.line_bytes += 1;
            }
            State::SizeBws => {
                if self.line_bytes >= MAX_SIZE_LINE_BYTES {
                    return Err(ChunkedError::LineTooLong);
                }
                self.state = match b {
                    b' ' | b'\t' => State::SizeBws,
                    b';' => State::Ext,
                    _ => return Err(ChunkedError::InvalidChunkSize),
                };
                self.line_bytes += 1;
            }
            State::Ext => {
                if self.line_bytes >= MAX_SIZE_LINE_BYTES {
                    return Err(ChunkedError::LineTooLong);
                }
                if b == b'\r' {
                    self.state = State::SizeLf;
                } else if !is_field_byte(b) {
                    return Err(ChunkedError::InvalidFraming);
                }
                self.line_bytes += 1;
            }
            State::SizeLf => {
                if b != b'\n' {
                    return Err(ChunkedError::InvalidFraming);
                }
                self.line_bytes = 0;
                self.state = if self.remaining == 0 {
                    State::TrailerStart
                } else {
                    State::Data
                };
            }
            State::DataCr => {
                if b != b'\r' {
                    return Err(ChunkedError::InvalidFraming);
                }
                self.state = State::DataLf;
            }
            State::DataLf => {
                if b != b'\n' {
                    return Err(ChunkedError::InvalidFraming);
                }
                debug_assert_eq!(self.remaining, 0);
                self.state = State::SizeStart;
            }
            State::TrailerStart if b == b'\r' => self.state = State::EndLf,
            State::TrailerStart | State::Trailer => {
                if self.trailer_bytes >= MAX_TRAILER_BYTES {
                    return Err(ChunkedError::LineTooLong);
                }
                self.state = match b {
                    b'\r' => State::TrailerLf,
                    _ if is_field_byte(b) => State::Trailer,
                    _ => return Err(ChunkedError::InvalidFraming),
                };
                self.trailer_bytes += 1;
            }
            State::TrailerLf => {
                if b != b'\n' {
                    return Err(ChunkedError::InvalidFraming);
                }
                if self.trailer_bytes >= MAX_TRAILER_BYTES {
                    return Err(ChunkedError::LineTooLong);
                }
                self.trailer_bytes += 1;
                self.state = State::TrailerStart;
            }
            State::EndLf => {
                if b != b'\n' {
                    return Err(ChunkedError::InvalidFraming);
                }
                self.state = State::Done;
            }
            State::Data | State::Done => {
                debug_assert!(false, "step called in state {:?}", self.state);
            }
        }
        Ok(())
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Bytes allowed inside a chunk extension or a trailer field line: HTAB, visible ASCII, SP and
/// obs-text (RFC 9110 section 5.5); no other control characters.
fn is_field_byte(b: u8) -> bool {
    b == b'\t' || (b >= 0x20 && b != 0x7f)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decode `input` delivered in pieces of `piece` bytes; returns (body, bytes consumed).
    fn decode_in_pieces(input: &[u8], piece: usize) -> Result<(Vec<u8>, usize), ChunkedError> {
        let mut dec = ChunkedDecoder::new();
        let mut body = Vec::new();
        let mut offset = 0;
        // Bytes delivered but not yet consumed, as a connection's read buffer would hold them.
        let mut end = 0;
        while !dec.is_done() {
            if offset == end {
                if end == input.len() {
                    break;
                }
                end = (end + piece).min(input.len());
            }
            let (used, data) = dec.decode(&input[offset..end])?;
            body.extend_from_slice(data);
            offset += used;
            if used == 0 && !dec.is_done() && end == input.len() {
                break;
            }
        }
        assert!(dec.is_done(), "body not complete");
        Ok((body, offset))
    }

    fn decode_all_ways(input: &[u8]) -> Result<(Vec<u8>, usize), ChunkedError> {
        let whole = decode_in_pieces(input, input.len().max(1));
        for piece in [1, 2, 3, 7] {
            assert_eq!(decode_in_pieces(input, piece), whole, "piece size {piece}");
        }
        whole
    }

    fn decode_err(input: &[u8]) -> ChunkedError {
        let mut dec = ChunkedDecoder::new();
        let mut rest = input;
        loop {
            match dec.decode(rest) {
                Err(e) => return e,
                Ok((used, _)) => {
                    assert!(
                        !dec.is_done(),
                        "unexpectedly valid: {:?}",
                        String::from_utf8_lossy(input)
                    );
                    assert!(
                        used > 0,
                        "stalled without error: {:?}",
                        String::from_utf8_lossy(input)
                    );
                    rest = &rest[used..];
                }
            }
        }
    }

    #[test]
    fn simple_body() {
        let input = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        let (body, used) = decode_all_ways(input).unwrap();
        assert_eq!(body, b"hello world");
        assert_eq!(used, input.len());
    }

    #[test]
    fn one_call_returns_one_data_run() {
        let input = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        let mut dec = ChunkedDecoder::new();
        let (used, data) = dec.decode(input).unwrap();
        assert_eq!(data, b"hello");
        // The framing up to the next chunk's data is consumed too.
        assert_eq!(used, b"5\r\nhello\r\n6\r\n".len());
        let (used2, data2) = dec.decode(&input[used..]).unwrap();
        assert_eq!(data2, b" world");
        assert_eq!(used + used2, input.len());
        assert!(dec.is_done());
    }

    #[test]
    fn empty_body_and_empty_input() {
        let mut dec = ChunkedDecoder::new();
        assert_eq!(dec.decode(b"").unwrap(), (0, &b""[..]));
        assert!(!dec.is_done());
        let (body, used) = decode_all_ways(b"0\r\n\r\n").unwrap();
        assert!(body.is_empty());
        assert_eq!(used, 5);
    }

    #[test]
    fn stops_at_end_of_body() {
        let input = b"3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
        let (body, used) = decode_all_ways(input).unwrap();
        assert_eq!(body, b"abc");
        assert_eq!(&input[used..], b"GET / HTTP/1.1\r\n");
        let mut dec = ChunkedDecoder::new();
        let mut rest = &input[..];
        while !dec.is_done() {
            let (n, _) = dec.decode(rest).unwrap();
            rest = &rest[n..];
        }
        assert_eq!(dec.decode(rest).unwrap(), (0, &b""[..]));
    }

    #[test]
    fn hex_sizes_and_leading_zeros() {
        let mut input = b"1A\r\n".to_vec();
        input.extend_from_slice(&[b'x'; 26]);
        input.extend_from_slice(b"\r\n00000a\r\n0123456789\r\n000\r\n\r\n");
        let (body, _) = decode_all_ways(&input).unwrap();
        assert_eq!(body.len(), 36);
        assert_eq!(&body[26..], b"0123456789");
    }

    #[test]
    fn extensions_and_trailers() {
        let input = b"5;name=value;flag\r\nhello\r\n4 ; q=\"a b\"\r\n!!!!\r\n0;last\r\nX-Checksum: abc\r\nX-Other:\tz\r\n\r\n";
        let (body, used) = decode_all_ways(input).unwrap();
        assert_eq!(body, b"hello!!!!");
        assert_eq!(used, input.len());
    }

    #[test]
    fn large_chunk_streams_without_buffering() {
        let mut input = b"10000\r\n".to_vec();
        input.extend((0..0x10000u32).map(|i| i as u8));
        input.extend_from_slice(b"\r\n0\r\n\r\n");
        let (body, _) = decode_in_pieces(&input, 1500).unwrap();
        assert_eq!(body.len(), 0x10000);
        assert!(body.iter().enumerate().all(|(i, &b)| b == i as u8));
    }

    #[test]
    fn malformed_sizes() {
        assert_eq!(decode_err(b"\r\nabc"), ChunkedError::InvalidChunkSize);
        assert_eq!(decode_err(b"g\r\n"), ChunkedError::InvalidChunkSize);
        assert_eq!(decode_err(b"-1\r\n"), ChunkedError::InvalidChunkSize);
        assert_eq!(decode_err(b"0x5\r\n"), ChunkedError::InvalidChunkSize);
        assert_eq!(decode_err(b"5 5\r\n"), ChunkedError::InvalidChunkSize);
        assert_eq!(decode_err(b"5 \r\nhello"), ChunkedError::InvalidChunkSize);
        assert_eq!(decode_err(b";ext\r\n"), ChunkedError::InvalidChunkSize);
        assert_eq!(decode_err(b" 5\r\n"), ChunkedError::InvalidChunkSize);
    }

    #[test]
    fn chunk_size_overflow() {
        // 16 hex digits fit in u64; the 17th significant digit overflows.
        let max = b"ffffffffffffffff\r\n";
        let mut dec = ChunkedDecoder::new();
        let (used, data) = dec.decode(max).unwrap();
        assert_eq!((used, data.len()), (max.len(), 0));
        assert_eq!(
            decode_err(b"10000000000000000\r\n"),
            ChunkedError::InvalidChunkSize
        );
        assert_eq!(
            decode_err(b"fffffffffffffffff\r\n"),
            ChunkedError::InvalidChunkSize
        );
    }

    #[test]
    fn bare_line_endings_are_rejected() {
        assert_eq!(
            decode_err(b"5\nhello\r\n0\r\n\r\n"),
            ChunkedError::InvalidFraming
        );
        assert_eq!(
            decode_err(b"5\rhello\r\n0\r\n\r\n"),
            ChunkedError::InvalidFraming
        );
        assert_eq!(
            decode_err(b"5\r\nhello\n0\r\n\r\n"),
            ChunkedError::InvalidFraming
        );
        assert_eq!(
            decode_err(b"5\r\nhelloX\r\n0\r\n\r\n"),
            ChunkedError::InvalidFraming
        );
        assert_eq!(decode_err(b"0\r\n\n"), ChunkedError::InvalidFraming);
        assert_eq!(decode_err(b"0\r\nX: y\n\r\n"), ChunkedError::InvalidFraming);
        assert_eq!(decode_err(b"0\r\n\rX"), ChunkedError::InvalidFraming);
        assert_eq!(
            decode_err(b"5;a\nb\r\nhello\r\n"),
            ChunkedError::InvalidFraming
        );
        assert_eq!(
            decode_err(b"5;a\x00\r\nhello\r\n"),
            ChunkedError::InvalidFraming
        );
    }

    #[test]
    fn data_before_an_error_is_returned_first() {
        let mut dec = ChunkedDecoder::new();
        let input = b"5\r\nhelloXX";
        let (used, data) = dec.decode(input).unwrap();
        assert_eq!(data, b"hello");
        assert_eq!(used, 8);
        assert_eq!(
            dec.decode(&input[used..]).unwrap_err(),
            ChunkedError::InvalidFraming
        );
    }

    #[test]
    fn size_line_limit() {
        let mut line = b"1;".to_vec();
        line.resize(MAX_SIZE_LINE_BYTES - 1, b'a');
        line.push(b'\r'); // exactly MAX_SIZE_LINE_BYTES before the LF
        line.extend_from_slice(b"\nx\r\n0\r\n\r\n");
        assert_eq!(decode_all_ways(&line).unwrap().0, b"x");

        let mut long = b"1;".to_vec();
        long.resize(MAX_SIZE_LINE_BYTES, b'a');
        long.extend_from_slice(b"\r\nx\r\n0\r\n\r\n");
        assert_eq!(decode_err(&long), ChunkedError::LineTooLong);

        let zeros = vec![b'0'; MAX_SIZE_LINE_BYTES + 1];
        assert_eq!(decode_err(&zeros), ChunkedError::LineTooLong);
    }

    #[test]
    fn trailer_limit() {
        let mut input = b"0\r\n".to_vec();
        let trailer_start = input.len();
        input.extend_from_slice(b"X: ");
        input.resize(trailer_start + MAX_TRAILER_BYTES - 2, b'v');
        input.extend_from_slice(b"\r\n\r\n"); // field line ends exactly at the limit
        assert!(decode_in_pieces(&input, 4096).is_ok());

        let mut over = b"0\r\nX: ".to_vec();
        over.resize(3 + MAX_TRAILER_BYTES + 1, b'v');
        over.extend_from_slice(b"\r\n\r\n");
        assert_eq!(decode_err(&over), ChunkedError::LineTooLong);
    }

    #[test]
    fn truncated_body_is_never_done() {
        let input = b"5\r\nhello\r\n0\r\n\r\n";
        for cut in 0..input.len() {
            let mut dec = ChunkedDecoder::new();
            let mut rest = &input[..cut];
            loop {
                let (used, _) = dec.decode(rest).unwrap();
                rest = &rest[used..];
                if used == 0 {
                    break;
                }
            }
            assert!(!dec.is_done(), "done after only {cut} bytes");
            assert!(rest.is_empty());
        }
    }
}
