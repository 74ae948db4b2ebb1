//! Engine tests with fakes (below).
