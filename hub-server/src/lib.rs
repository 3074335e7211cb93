//! hub-server (work in progress).
