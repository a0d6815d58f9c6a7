//! Runs a Plan: the only code that changes a server.
