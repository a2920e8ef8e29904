//! Server-sent events, parsed incrementally from the bytes as they arrive (the WHATWG
//! event-stream format: `event:` and `data:` fields, comments, CR/LF/CRLF line ends).

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field (`message` when absent).
    pub event: String,
    /// The `data:` lines joined by `\n`.
    pub data: String,
}

/// Largest line or event the parser holds before giving up on the stream.
pub const MAX_EVENT_BYTES: usize = 1 << 20;

/// The stream broke the format or the size bound: reconnect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event stream: {0}")]
pub struct SseError(pub &'static str);

/// Incremental parser state.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    last_was_cr: bool,
    event: String,
    data: String,
    has_data: bool,
}

impl SseParser {
    /// Feed bytes; returns the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        let mut out = Vec::new();
        for &b in bytes {
            match b {
                b'\n' if self.last_was_cr => self.last_was_cr = false, // the LF of a CRLF
                b'\n' | b'\r' => {
                    self.last_was_cr = b == b'\r';
                    let line = std::mem::take(&mut self.line);
                    if let Some(event) = self.line_done(&line)? {
                        out.push(event);
                    }
                }
                _ => {
                    self.last_was_cr = false;
                    if self.line.len() >= MAX_EVENT_BYTES {
                        return Err(SseError("a line is longer than the limit"));
                    }
                    self.line.push(b);
                }
            }
        }
        Ok(out)
    }

    fn line_done(&mut self, line: &[u8]) -> Result<Option<SseEvent>, SseError> {
        if line.is_empty() {
            let event = std::mem::take(&mut self.event);
            let data = std::mem::take(&mut self.data);
            if !std::mem::take(&mut self.has_data) {
                return Ok(None);
            }
            let event = if event.is_empty() {
                "message".to_owned()
            } else {
                event
            };
            return Ok(Some(SseEvent { event, data }));
        }
        if line[0] == b':' {
            return Ok(None); // a comment (keep-alive)
        }
        let line = std::str::from_utf8(line).map_err(|_| SseError("a line is not UTF-8"))?;
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => value.clone_into(&mut self.event),
            "data" => {
                if self.data.len() + value.len() + 1 > MAX_EVENT_BYTES {
                    return Err(SseError("an event is larger than the limit"));
                }
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            _ => {} // id, retry and unknown fields: nothing this app uses
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ev(event: &str, data: &str) -> SseEvent {
        SseEvent {
            event: event.into(),
            data: data.into(),
        }
    }

    #[test]
    fn events_comments_and_every_line_ending() {
        let mut p = SseParser::default();
        let got = p
            .push(b": keep-alive\n\nevent: approval.created\ndata: {\"a\":1}\n\n")
            .unwrap();
        assert_eq!(got, [ev("approval.created", "{\"a\":1}")]);
        let got = p
            .push(b"data: one\r\ndata:two\r\rdata: x\rdata: y\n\n")
            .unwrap();
        assert_eq!(got, [ev("message", "one\ntwo"), ev("message", "x\ny")]);
        // An event split anywhere, even inside a CRLF, comes out once and whole.
        let bytes = b"event: lagged\r\ndata: {}\r\n\r\n";
        for cut in 0..bytes.len() {
            let mut p = SseParser::default();
            let mut got = p.push(&bytes[..cut]).unwrap();
            got.extend(p.push(&bytes[cut..]).unwrap());
            assert_eq!(got, [ev("lagged", "{}")], "cut at {cut}");
        }
        // A blank line without data dispatches nothing.
        assert!(p.push(b"event: x\n\n").unwrap().is_empty());
    }

    #[test]
    fn oversized_and_non_utf8_streams_are_refused() {
        let mut p = SseParser::default();
        let big = vec![b'a'; MAX_EVENT_BYTES + 1];
        assert!(p.push(&big).is_err());
        let mut p = SseParser::default();
        assert!(p.push(b"data: \xff\xfe\n").is_err());
        let mut p = SseParser::default();
        let line = format!("data: {}\n", "b".repeat(MAX_EVENT_BYTES / 2));
        assert!(p.push(line.as_bytes()).is_ok());
        assert!(p.push(line.as_bytes()).is_err());
    }

    proptest! {
        #[test]
        fn any_bytes_never_panic(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16)) {
            let mut p = SseParser::default();
            for c in chunks {
                if p.push(&c).is_err() { break; }
            }
        }
    }
}
