//! One module per `gemmakit` command: its arguments (`…Args`) and what it does (`execute`).

pub mod bench;
pub mod chat;
pub mod convert;
pub mod eval;
pub mod info;
pub mod models;
pub mod perplexity;
pub mod pull;
pub mod run;
pub mod tokenize;

use std::io::Write;

use gemmakit::generate::{Event, Flow};

/// Streams generated text to stdout as it comes (`run` and `chat`); thoughts go to stderr,
/// dimmed, so that stdout holds only the answer.
pub(crate) fn stream_to_stdout(event: Event) -> Flow {
    match event {
        Event::Text(t) => {
            print!("{t}");
            let _ = std::io::stdout().flush();
        }
        Event::Thought(t) => eprint!("\x1b[2m{t}\x1b[0m"),
        Event::ToolCall(call) => println!("\n[tool call] {} {}", call.name, call.arguments),
        Event::Done(_) => {}
    }
    Flow::Continue
}
