//! Local seats with real processes (below).
