//! 5. Machine binding faked with bind mounts over the fingerprint's sources.
