//! What typed errors carry as their cause ([`Cause`]), and printing an error with every cause
//! behind it ([`Chain`]).
//!
//! Our errors say in their own text only what they add (`connecting to 10.0.0.1:443`); the
//! error that caused them is their `source()`, never pasted into a string. Whoever prints an
//! error for a person (a log line, a JSON error body, the CLI) prints the chain:
//!
//! ```
//! use chorus_core::error::{Chain, cause};
//! #[derive(Debug, thiserror::Error)]
//! #[error("reading the manifest")]
//! struct Outer(#[source] chorus_core::error::Cause);
//!
//! let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
//! let e = Outer(cause(io));
//! assert_eq!(Chain(&e).to_string(), "reading the manifest: no such file");
//! ```

use std::error::Error;
use std::fmt;
use std::sync::Arc;

/// The cause of an error: any error, shared so that errors holding one stay `Clone` (a
/// coalesced fetch hands one failure to every waiter).
pub type Cause = Arc<dyn Error + Send + Sync + 'static>;

/// Wraps `e` as a [`Cause`].
pub fn cause(e: impl Error + Send + Sync + 'static) -> Cause {
    Arc::new(e)
}

/// A cause that is only a message, for failures no error value stands behind (a task that
/// ended without answering).
#[must_use]
pub fn message(text: impl Into<String>) -> Cause {
    #[derive(Debug)]
    struct Message(String);
    impl fmt::Display for Message {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(&self.0)
        }
    }
    impl Error for Message {}
    Arc::new(Message(text.into()))
}

/// Displays an error and its causes as `outer: inner: innermost`, skipping a cause whose text
/// the line already holds (some libraries repeat their source in their own message).
pub struct Chain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut line = self.0.to_string();
        let mut next = self.0.source();
        while let Some(c) = next {
            let text = c.to_string();
            if !text.is_empty() && !line.contains(&text) {
                line.push_str(": ");
                line.push_str(&text);
            }
            next = c.source();
        }
        f.write_str(&line)
    }
}

impl fmt::Debug for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum E {
        #[error("fetching {0}")]
        Fetch(&'static str, #[source] Cause),
    }

    #[test]
    fn a_chain_prints_each_cause_once() {
        let inner = E::Fetch("a", message("connection refused"));
        let outer = E::Fetch("b", cause(inner));
        assert_eq!(Chain(&outer).to_string(), "fetching b: fetching a: connection refused");
        // A library that repeats its source in its own text is not printed twice.
        let io = std::io::Error::other("disk full");
        let e = E::Fetch("c", message(format!("write failed: {io}")));
        assert_eq!(Chain(&e).to_string(), "fetching c: write failed: disk full");
    }
}
