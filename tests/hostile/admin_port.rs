//! 2. The admin port: idle connections, header and idle timeouts, its own connection cap.
