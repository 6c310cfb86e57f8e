//! The reference server over real sockets on 127.0.0.1: real WebSocket, real SSE,
//! real HTTP. One test binary; one module per area.

mod support;

mod bad_input;
mod cluster;
mod conflicts;
mod durable;
mod fanout;
mod hostile;
mod http;
mod presence;
mod resume;
mod shutdown;
mod slow_consumer;
mod slowloris;
