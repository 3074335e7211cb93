//! backplane-postgres (work in progress).
