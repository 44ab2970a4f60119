//! Where a constraint applies during one generation, and how the sampler obeys it.
//!
//! The answer constraint (`GenerateOptions::constraint`) starts with the answer: before it the
//! model may open its thought channel (Gemma 4 thinking), which runs unconstrained, and — with
//! strict tools — call a tool. A tool call (`<|tool_call>` … `<tool_call|>`) follows the tool
//! grammar when any tool is strict. The turn may end (an end-of-turn id) only where the
//! constraint is complete; a finished grammar ends the turn.

use serde_json::Value;

use super::EngineInner;
use crate::constraint::ConstraintMatcher;
use crate::constraint::tool_grammar::any_strict;
use crate::error::Result;

pub(crate) struct Guide {
    /// `None`: the answer is free text.
    answer: Option<ConstraintMatcher>,
    /// A fresh tool-call matcher, copied for every call.
    tool_start: Option<ConstraintMatcher>,
    /// The call being written.
    tool_call: Option<ConstraintMatcher>,
    answer_started: bool,
    in_thought: bool,
    channel_open: Option<u32>,
    channel_close: Option<u32>,
    tool_call_open: Option<u32>,
    tool_response: Option<u32>,
    calls_made: bool,
    stop_ids: Vec<u32>,
}

impl Guide {
    /// `None` when nothing is constrained (the decode loop then never asks).
    pub(crate) fn new(
        engine: &EngineInner,
        options: &super::GenerateOptions,
        tools: &[Value],
        stop_ids: &[u32],
    ) -> Result<Option<Guide>> {
        let strict_tools = any_strict(tools);
        if options.constraint.is_none() && !strict_tools {
            return Ok(None);
        }
        let compiler = engine.constraint_compiler()?;
        let tok = &engine.tokenizer;
        let answer = match &options.constraint {
            Some(c) => Some(compiler.start(c)?),
            None => None,
        };
        let tool_call_open = tok.token_id("<|tool_call>");
        let tool_start = if strict_tools {
            Some(compiler.start_tool_call(tools)?)
        } else {
            None
        };
        Ok(Some(Guide {
            answer,
            tool_start,
            tool_call: None,
            answer_started: false,
            in_thought: false,
            channel_open: tok.token_id("<|channel>"),
            channel_close: tok.token_id("<channel|>"),
            tool_call_open,
            tool_response: tok.token_id("<|tool_response>"),
            calls_made: false,
            stop_ids: stop_ids.to_vec(),
        }))
    }

    /// Before the answer, the thought channel may open; with strict tools a call may open
    /// before a constrained answer or anywhere in a free one, and after a call the model may
    /// hand over to the tool (`<|tool_response>`).
    fn may_open(&self, token: u32) -> bool {
        let before_answer = !self.answer_started;
        let calls_allowed = before_answer || self.answer.is_none();
        (before_answer && Some(token) == self.channel_open)
            || (self.tool_start.is_some() && calls_allowed && Some(token) == self.tool_call_open)
            || (self.calls_made && calls_allowed && Some(token) == self.tool_response)
    }

    /// Whether `token` may come next (no mask computed).
    pub(crate) fn allows(&mut self, token: u32) -> Result<bool> {
        let stop = self.stop_ids.contains(&token);
        if let Some(call) = &mut self.tool_call {
            return if stop { Ok(false) } else { call.allows(token) };
        }
        if self.in_thought {
            return Ok(true);
        }
        if self.may_open(token) {
            return Ok(true);
        }
        match &mut self.answer {
            None => Ok(true),
            Some(answer) if stop => answer.is_accepting(),
            Some(answer) => answer.allows(token),
        }
    }

    /// Sets the logits of every token that may not come next to −∞.
    pub(crate) fn mask(&mut self, logits: &mut [f32]) -> Result<()> {
        let extra: Vec<u32> = [self.channel_open, self.tool_call_open, self.tool_response]
            .into_iter()
            .flatten()
            .filter(|&t| self.may_open(t))
            .collect();
        let (matcher, stops_allowed) = match (&mut self.tool_call, &mut self.answer) {
            (Some(call), _) => (call, false),
            (None, Some(answer)) if !self.in_thought => {
                let accepting = answer.is_accepting()?;
                (answer, accepting)
            }
            _ => return Ok(()),
        };
        let allowed = matcher.allowed()?;
        // End-of-turn ids follow whether the text is complete; the openers are allowed on top
        // of the grammar.
        let keep: Vec<(usize, f32)> = extra
            .iter()
            .chain(if stops_allowed {
                &self.stop_ids[..]
            } else {
                &[]
            })
            .filter_map(|&id| logits.get(id as usize).map(|&l| (id as usize, l)))
            .collect();
        let vocab = allowed.len();
        for (id, logit) in logits.iter_mut().enumerate() {
            // Ids past the vocabulary (padded embedding rows) are never text.
            if id >= vocab || !allowed.is_allowed(id as u32) {
                *logit = f32::NEG_INFINITY;
            }
        }
        for &id in &self.stop_ids {
            if let Some(l) = logits.get_mut(id as usize) {
                *l = f32::NEG_INFINITY;
            }
        }
        for (id, l) in keep {
            logits[id] = l;
        }
        Ok(())
    }

    /// Moves past `token` (allowed); returns the tokens the grammar forces next, already
    /// accounted for.
    pub(crate) fn advance(&mut self, token: u32) -> Result<Vec<u32>> {
        if let Some(call) = &mut self.tool_call {
            call.consume(token)?;
            if call.is_finished() {
                self.tool_call = None;
                self.calls_made = true;
                return Ok(Vec::new());
            }
            return call.take_forced();
        }
        if self.in_thought {
            if Some(token) == self.channel_close {
                self.in_thought = false;
            }
            return Ok(Vec::new());
        }
        if self.may_open(token) {
            if Some(token) == self.channel_open {
                self.in_thought = true;
                return Ok(Vec::new());
            }
            let Some(start) = &self.tool_start else {
                return Ok(Vec::new());
            };
            if Some(token) != self.tool_call_open {
                return Ok(Vec::new());
            }
            let mut call = start.fork();
            let forced = call.take_forced()?;
            self.tool_call = Some(call);
            return Ok(forced);
        }
        self.answer_started = true;
        match &mut self.answer {
            Some(answer) => {
                answer.consume(token)?;
                if answer.is_finished() {
                    Ok(Vec::new())
                } else {
                    answer.take_forced()
                }
            }
            None => Ok(Vec::new()),
        }
    }

    /// The answer's grammar is complete and allows nothing more: the turn ends.
    pub(crate) fn finished(&self) -> bool {
        self.tool_call.is_none() && self.answer.as_ref().is_some_and(|a| a.is_finished())
    }
}
