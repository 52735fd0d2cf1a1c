//! 3. Silent authenticated clients filling `max_connections`; 4. memory for announced
//!    frames before they arrive.
