//! The WebSocket wire layer (RFC 6455), below every stage that speaks it:
//! the frame codec ([`frame`]: server frames built once as complete
//! buffers, the splitter and masked client frames for the tools), the
//! reader that parses and checks what clients send ([`reader`]: masking,
//! limits, UTF-8, control frames, fragmentation), and the close codes
//! ([`close`]).

pub mod close;
pub mod frame;
pub mod reader;
