//! 1. A promised lease lost in a SIGKILL: SIGKILL loops at short leases, quiet and busy.
