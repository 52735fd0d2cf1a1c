//! 4. fork: children inheriting a session and its seat claims.
