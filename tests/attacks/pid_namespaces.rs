//! 3. PID namespaces: processes in separate PID namespaces each claiming to be pid 1.
