use thiserror::Error;

/// Everything a client's bytes can do wrong. Each variant is one status code
/// and one stable JSON `error` code; the connection is closed after the
/// answer because the framing can no longer be trusted.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum HttpError {
    #[error("{0}")]
    BadRequest(&'static str),
    #[error("request headers exceed the limit")]
    HeadersTooLarge,
    #[error("request body exceeds the limit")]
    PayloadTooLarge,
    #[error("transfer coding not supported (only chunked)")]
    NotImplemented,
    #[error("only 100-continue expectations are supported")]
    ExpectationFailed,
    #[error("only HTTP/1.0 and HTTP/1.1 are served")]
    VersionNotSupported,
    #[error("request not completed in time")]
    RequestTimeout,
}

impl HttpError {
    pub fn status(&self) -> u16 {
        match self {
            HttpError::BadRequest(_) => 400,
            HttpError::RequestTimeout => 408,
            HttpError::PayloadTooLarge => 413,
            HttpError::ExpectationFailed => 417,
            HttpError::HeadersTooLarge => 431,
            HttpError::NotImplemented => 501,
            HttpError::VersionNotSupported => 505,
        }
    }

    /// Stable machine-readable code for the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            HttpError::BadRequest(_) => "bad_request",
            HttpError::RequestTimeout => "request_timeout",
            HttpError::PayloadTooLarge => "payload_too_large",
            HttpError::ExpectationFailed => "expectation_failed",
            HttpError::HeadersTooLarge => "headers_too_large",
            HttpError::NotImplemented => "not_implemented",
            HttpError::VersionNotSupported => "version_not_supported",
        }
    }

    pub fn message(&self) -> &'static str {
        match self {
            HttpError::BadRequest(m) => m,
            HttpError::HeadersTooLarge => "request headers exceed the limit",
            HttpError::PayloadTooLarge => "request body exceeds the limit",
            HttpError::NotImplemented => "transfer coding not supported (only chunked)",
            HttpError::ExpectationFailed => "only 100-continue expectations are supported",
            HttpError::VersionNotSupported => "only HTTP/1.0 and HTTP/1.1 are served",
            HttpError::RequestTimeout => "request not completed in time",
        }
    }
}
