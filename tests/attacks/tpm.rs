//! 6. Rollback of a software container file on a machine with a TPM; 8. rollback of the usage
//!    log's counter.
