//! Property tests of the API's input handling (issue #7): JSON Patch on a
//! node ([`patch`]) and every request the router parses, sent to the real
//! router over a real SQLite store ([`http`]). Each property runs a fixed
//! number of cases from a fixed seed (see [`gen::config`]).

mod gen;
mod http;
mod openapi;
mod patch;
mod regressions;
