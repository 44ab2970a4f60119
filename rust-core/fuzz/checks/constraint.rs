//! Arbitrary constraints compiled for a real (tiny) Gemma vocabulary: the first byte picks a JSON
//! schema, a regex, a Lark grammar, a choice list (lines) or a tool list (a JSON array of tool
//! declarations, through `start_tool_call`); the next four bytes steer up to eight decoding steps
//! (`allowed()` → pick an allowed token → `consume()`), checked against `allows()`, forced
//! tokens, `fork()` and `rollback()`. The rest is the constraint's text.

use std::sync::{Arc, LazyLock};

use gemmakit::GemmaError;
use gemmakit::constraint::{Constraint, ConstraintCompiler, ConstraintMatcher};
use gemmakit::tokenizer::Tokenizer;
use serde_json::Value;

use super::Outcome;

const TOKENIZER: &str =
    include_str!("../../../tests/fixtures/tiny_gemma4_tokenizer/tokenizer.json");

/// Compiled once per process, as the engine does: (compiler, vocabulary size, end of turn).
static COMPILER: LazyLock<(ConstraintCompiler, usize, u32)> = LazyLock::new(|| {
    let tok = Arc::new(Tokenizer::from_json_str(TOKENIZER).unwrap());
    let eos = tok.eos_id.expect("the fixture has <eos>");
    let vocab = tok.vocab_size();
    (ConstraintCompiler::new(tok, &[eos]).unwrap(), vocab, eos)
});

pub fn run(data: &[u8]) -> Outcome {
    let Some((head, text)) = data.split_first_chunk::<5>() else {
        return Outcome::NotApplicable;
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return Outcome::NotApplicable;
    };
    let (compiler, vocab, eos) = &*COMPILER;
    let started = match head[0] % 5 {
        0 => Constraint::json_schema_text(text).and_then(|c| compiler.start(&c)),
        1 => compiler.start(&Constraint::Regex(text.into())),
        2 => compiler.start(&Constraint::Lark(text.into())),
        3 => compiler.start(&Constraint::Choice(
            text.lines().map(String::from).collect(),
        )),
        _ => match serde_json::from_str::<Vec<Value>>(text) {
            Ok(tools) => compiler.start_tool_call(&tools),
            Err(_) => return Outcome::NotApplicable,
        },
    };
    let mut m = match started {
        Ok(m) => m,
        Err(e @ GemmaError::InvalidConstraint(_)) => return Outcome::Rejected(e.to_string()),
        Err(e) => panic!("a bad constraint is InvalidConstraint, got {e:?}"),
    };
    for step in 0..8 {
        match m.take_forced() {
            Ok(_) => {}
            // llguidance stops a grammar that runs out of its budget: a typed error.
            Err(e @ GemmaError::InvalidConstraint(_)) => return Outcome::Rejected(e.to_string()),
            Err(e) => panic!("{e:?}"),
        }
        if m.is_finished() {
            break;
        }
        let allowed = match mask(&mut m, *vocab) {
            Ok(allowed) => allowed,
            Err(e @ GemmaError::InvalidConstraint(_)) => return Outcome::Rejected(e.to_string()),
            Err(e) => panic!("{e:?}"),
        };
        if allowed.is_empty() {
            break;
        }
        let pick = allowed[head[1 + step % 4] as usize * (step + 1) % allowed.len()];
        assert!(
            m.allows(pick).unwrap(),
            "token {pick} is in the mask but not allowed"
        );
        assert!(!m.allows(*vocab as u32).unwrap());
        if pick == *eos {
            assert!(
                m.is_accepting().unwrap(),
                "end of turn allowed before the text is complete"
            );
            break;
        }
        // A fork stands where its original stood; one consumed token rolls back to there.
        let mut twin = m.fork();
        m.consume(pick).expect("an allowed token is consumed");
        if step % 2 == 1 {
            m.rollback(1).expect("one consumed token rolls back");
            assert_eq!(mask(&mut m, *vocab).unwrap(), allowed);
            assert_eq!(mask(&mut twin, *vocab).unwrap(), allowed);
            twin.consume(pick).expect("the fork consumes alike");
            m = twin;
        }
    }
    assert!(m.consume(*vocab as u32).is_err());
    Outcome::Accepted
}

fn mask(m: &mut ConstraintMatcher, vocab: usize) -> gemmakit::Result<Vec<u32>> {
    let mask = m.allowed()?;
    Ok((0..vocab as u32).filter(|&t| mask.is_allowed(t)).collect())
}
