//! Parsing responses: what flashd's own test clients and bench harness use
//! to read what the server sent. Bytes in, no sockets.

/// One response with the headers flashd's tests care about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl ParsedResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn body_str(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap_or("<non-utf8>")
    }
}

/// Parse one `Content-Length`-framed response from the front of `buf`.
/// `Ok(None)`: incomplete. Interim `100 Continue` responses are returned
/// like any other.
pub fn parse_response(buf: &[u8]) -> Result<Option<(ParsedResponse, usize)>, String> {
    parse(buf, false)
}

/// Parse the answer to a `HEAD` request: whatever its `Content-Length`
/// says, no body follows (RFC 9110 §9.3.2). `body` is left empty.
pub fn parse_head_response(buf: &[u8]) -> Result<Option<(ParsedResponse, usize)>, String> {
    parse(buf, true)
}

fn parse(buf: &[u8], head_request: bool) -> Result<Option<(ParsedResponse, usize)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("bad response head: {e}")),
    };
    let status = resp.code.unwrap_or(0);
    let headers: Vec<(String, String)> = resp
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| {
            v.trim()
                .parse()
                .map_err(|_| "bad content-length".to_string())
        })
        .transpose()?
        .unwrap_or(0);
    // Interim (1xx) answers have no body either.
    let len = if head_request && status >= 200 {
        0
    } else {
        len
    };
    if buf.len() < head_len + len {
        return Ok(None);
    }
    Ok(Some((
        ParsedResponse {
            status,
            headers,
            body: buf[head_len..head_len + len].to_vec(),
        },
        head_len + len,
    )))
}
