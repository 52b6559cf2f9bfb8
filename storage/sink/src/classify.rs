//! Which kind of failure a MySQL error is: transient (the server or the
//! connection; retried), permanent (the data or the statement; the record
//! is parked) or unclassified (retried a few times, then permanent).

/// What kind of failure a write error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The server or the connection: retry.
    Transient,
    /// The data or the statement: it will fail the same way forever.
    Permanent,
    /// Not known to be either.
    Unclassified,
}

/// A failed write, classified.
#[derive(Debug)]
pub(crate) struct WriteError {
    pub class: Class,
    pub msg: String,
}

/// MySQL/MariaDB server error codes that say the server, the connection or
/// contention is at fault (retrying is right).
const TRANSIENT_CODES: &[u16] = &[
    1021, // disk full
    1030, // got error from storage engine
    1037, 1038, 1041, // out of memory
    1040, // too many connections
    1043, // bad handshake
    1044, 1045, 1142, // access denied: an operator fixes grants
    1049, // unknown database: not migrated yet
    1053, // server shutdown in progress
    1114, // table is full
    1146, // table does not exist: recreated after a reset
    1152, 1153, 1154, 1155, 1156, 1157, 1158, 1159, 1160, 1161, // network
    1180, 1181, // commit / rollback failed
    1203, // too many connections of this user
    1205, // lock wait timeout
    1213, // deadlock
    1290, 1836, 1792, // read-only
    1317, // query interrupted
    1615, // statement must be re-prepared
    1637, // too many active transactions
    1927, // connection killed
    1969, 3024, // statement timeout
    2002, 2003, 2006, 2013, 2055, // client: cannot connect, gone away, lost
    4031, // disconnected for inactivity
];

/// Codes that say the data or the statement is wrong: the same write will
/// fail the same way forever.
const PERMANENT_CODES: &[u16] = &[
    1048, // column cannot be null
    1054, // unknown column
    1062, // duplicate key (our upserts never collide)
    1064, // syntax
    1136, // column count
    1118, // row size too large
    1264, // out of range
    1265, // data truncated
    1292, // incorrect value
    1300, // invalid character string
    1364, // field has no default
    1366, // incorrect string value (e.g. 4-byte UTF-8 in utf8)
    1367, // illegal value
    1390, // too many placeholders
    1406, // data too long
    1452, 1451, // foreign key
];

/// Which kind of failure a MySQL error is.
pub fn classify(e: &mysql_async::Error) -> Class {
    use mysql_async::{DriverError as D, Error as E};
    match e {
        E::Server(s) => classify_code(s.code),
        E::Io(_) => Class::Transient,
        E::Driver(d) => match d {
            D::ConnectionClosed
            | D::PoolDisconnected
            | D::PacketOutOfOrder
            | D::UnexpectedPacket { .. }
            | D::BadCompressedPacketHeader => Class::Transient,
            D::StmtParamsMismatch { .. }
            | D::StmtParamsNumberExceedsLimit { .. }
            | D::PacketTooLarge
            | D::MixedParams
            | D::NamedParamsForPositionalQuery
            | D::MissingNamedParam { .. } => Class::Permanent,
            _ => Class::Unclassified,
        },
        _ => Class::Unclassified,
    }
}

/// Which kind of failure a server error code is.
pub fn classify_code(code: u16) -> Class {
    if TRANSIENT_CODES.contains(&code) {
        Class::Transient
    } else if PERMANENT_CODES.contains(&code) {
        Class::Permanent
    } else {
        Class::Unclassified
    }
}

/// A MySQL error as a [`WriteError`] (`map_err(sql_err)`).
pub(crate) fn sql_err(e: mysql_async::Error) -> WriteError {
    WriteError {
        class: classify(&e),
        msg: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_that_recur_are_told_from_outages() {
        // Data and statement errors: the same write fails forever.
        for code in [1366, 1406, 1390, 1064, 1264, 1048] {
            assert_eq!(classify_code(code), Class::Permanent, "{code}");
        }
        // The server or the connection: retry.
        for code in [1205, 1213, 2006, 2013, 1053, 1927, 1040, 1146] {
            assert_eq!(classify_code(code), Class::Transient, "{code}");
        }
        assert_eq!(classify_code(9999), Class::Unclassified);
        let lost = mysql_async::Error::Driver(mysql_async::DriverError::ConnectionClosed);
        assert_eq!(classify(&lost), Class::Transient);
        let too_many =
            mysql_async::Error::Driver(mysql_async::DriverError::StmtParamsNumberExceedsLimit {
                supplied: 70_000,
            });
        assert_eq!(classify(&too_many), Class::Permanent);
    }
}
