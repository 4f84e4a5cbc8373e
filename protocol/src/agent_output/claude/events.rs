//! The lines of Claude Code's `--output-format stream-json --verbose`, as
//! typed structs that borrow from the line (no `Value` trees, no copies of
//! strings without escapes). Every field is lenient: a field of another
//! type than expected reads as absent instead of failing the line, so a
//! change in the CLI's schema loses that field, not the event.
//!
//! Only the fields aam reads are declared; serde skips the rest (tool
//! results, file contents, thinking) without allocating.

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

/// One line of the stream: the union of the fields of every event type
/// aam reads (`system`, `assistant`, `user`, `result`, `rate_limit_event`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct EventLine<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Text<'a>,
    #[serde(borrow)]
    pub subtype: Text<'a>,
    #[serde(borrow)]
    pub session_id: Text<'a>,
    // system init
    #[serde(borrow)]
    pub model: Text<'a>,
    #[serde(borrow)]
    pub cwd: Text<'a>,
    // assistant and user
    #[serde(borrow)]
    pub message: Obj<Message<'a>>,
    /// Set on the messages of a subagent (the `Task` call it runs for).
    #[serde(borrow)]
    pub parent_tool_use_id: Text<'a>,
    /// On a message the CLI made up itself (an API error), and on `api_retry`.
    #[serde(borrow)]
    pub error: Text<'a>,
    // result
    pub is_error: Flag,
    pub api_error_status: Num,
    pub num_turns: Num,
    #[serde(borrow)]
    pub result: Text<'a>,
    pub total_cost_usd: Num,
    pub usage: Obj<Usage>,
    #[serde(rename = "modelUsage", borrow)]
    pub model_usage: Obj<BTreeMap<Cow<'a, str>, Obj<ModelUsage>>>,
    #[serde(borrow)]
    pub errors: List<Vec<Text<'a>>>,
    // system api_retry
    pub attempt: Num,
    pub max_retries: Num,
    pub error_status: Num,
    // rate_limit_event
    #[serde(borrow)]
    pub rate_limit_info: Obj<RateLimitInfo<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Message<'a> {
    #[serde(borrow)]
    pub id: Text<'a>,
    #[serde(borrow)]
    pub model: Text<'a>,
    #[serde(borrow)]
    pub content: Blocks<'a>,
    pub usage: Obj<Usage>,
}

/// What a message says: a text, or a tool call.
pub enum Part<'m, 'a> {
    Text(&'m str),
    ToolCall {
        name: &'m str,
        input: &'m ToolInput<'a>,
    },
}

impl<'a> Message<'a> {
    /// Its non-blank texts and its tool calls, in order (thinking and
    /// other blocks left out).
    pub fn parts(&self) -> impl Iterator<Item = Part<'_, 'a>> {
        self.content
            .0
            .iter()
            .filter_map(|block| match block.kind.as_deref() {
                Some("text") => block
                    .text
                    .as_deref()
                    .filter(|t| !t.trim().is_empty())
                    .map(Part::Text),
                Some("tool_use") => Some(Part::ToolCall {
                    name: block.name.as_deref().unwrap_or("tool"),
                    input: &block.input.0,
                }),
                _ => None,
            })
    }
}

/// One item of a message's content: `text`, `thinking`, `tool_use`, or
/// (in a user message) `tool_result`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Block<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Text<'a>,
    #[serde(borrow)]
    pub text: Text<'a>,
    // tool_use
    #[serde(borrow)]
    pub id: Text<'a>,
    #[serde(borrow)]
    pub name: Text<'a>,
    #[serde(borrow)]
    pub input: Obj<ToolInput<'a>>,
    // tool_result
    #[serde(borrow)]
    pub tool_use_id: Text<'a>,
    #[serde(borrow)]
    pub content: ResultText<'a>,
    pub is_error: Flag,
}

/// The arguments of a tool call that say what it works on.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ToolInput<'a> {
    #[serde(borrow)]
    pub file_path: Text<'a>,
    #[serde(borrow)]
    pub notebook_path: Text<'a>,
    #[serde(borrow)]
    pub command: Text<'a>,
    #[serde(borrow)]
    pub pattern: Text<'a>,
    #[serde(borrow)]
    pub url: Text<'a>,
    #[serde(borrow)]
    pub query: Text<'a>,
    #[serde(borrow)]
    pub description: Text<'a>,
    #[serde(borrow)]
    pub skill: Text<'a>,
    #[serde(borrow)]
    pub path: Text<'a>,
    #[serde(borrow)]
    pub prompt: Text<'a>,
}

/// Tokens of one API message (snake case, as the Messages API has them).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Usage {
    pub input_tokens: Num,
    pub output_tokens: Num,
    pub cache_read_input_tokens: Num,
    pub cache_creation_input_tokens: Num,
}

/// Tokens and cost of one model over a run (camel case, as the CLI has them).
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ModelUsage {
    pub input_tokens: Num,
    pub output_tokens: Num,
    pub cache_read_input_tokens: Num,
    pub cache_creation_input_tokens: Num,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RateLimitInfo<'a> {
    #[serde(borrow)]
    pub status: Text<'a>,
    /// Epoch seconds.
    pub resets_at: Num,
    #[serde(borrow)]
    pub rate_limit_type: Text<'a>,
}

/// The `type` of a line, read without parsing it when the line starts
/// the way the CLI writes every line (`{"type":"...`); none otherwise.
pub fn sniff_kind(line: &[u8]) -> Option<&[u8]> {
    let rest = line.strip_prefix(b"{\"type\":\"")?;
    let end = memchr::memchr(b'"', rest)?;
    Some(&rest[..end])
}

/// A string that may be missing or of another type (then it is `None`).
#[derive(Debug, Default)]
pub struct Text<'a>(pub Option<Cow<'a, str>>);

impl<'a> Text<'a> {
    pub fn as_deref(&self) -> Option<&str> {
        self.0.as_deref()
    }

    pub fn is(&self, value: &str) -> bool {
        self.0.as_deref() == Some(value)
    }
}

/// A number that may be missing or of another type.
#[derive(Debug, Default, Clone, Copy)]
pub struct Num(pub Option<f64>);

impl Num {
    /// As a count: none when negative or not finite; saturated when huge.
    pub fn count(self) -> Option<u64> {
        self.0
            .filter(|n| n.is_finite() && *n >= 0.0)
            .map(|n| n as u64)
    }

    pub fn count_or_zero(self) -> u64 {
        self.count().unwrap_or(0)
    }
}

/// A boolean that may be missing or of another type.
#[derive(Debug, Default, Clone, Copy)]
pub struct Flag(pub Option<bool>);

/// An object that may be missing or of another type (then it is `T`'s default).
#[derive(Debug, Default)]
pub struct Obj<T>(pub T);

/// A list that may be missing or of another type (then it is empty).
#[derive(Debug, Default)]
pub struct List<T>(pub T);

/// A message's content: a list of blocks, or a plain string (one text block).
#[derive(Debug, Default)]
pub struct Blocks<'a>(pub Vec<Block<'a>>);

/// A tool result's content, reduced to its first text: a string, or a
/// list of blocks of which the first with a `text` counts.
#[derive(Debug, Default)]
pub struct ResultText<'a>(pub Option<Cow<'a, str>>);

/// A lenient value: what it keeps of each JSON shape; every other shape
/// reads as its default (a list or an object is drained, not kept).
trait Leaf<'de>: Default {
    fn from_bool(_: bool) -> Self {
        Self::default()
    }

    fn from_number(_: f64) -> Self {
        Self::default()
    }

    /// A string without escapes, borrowed from the line.
    fn from_borrowed_str(text: &'de str) -> Self {
        Self::from_str(text)
    }

    fn from_str(_: &str) -> Self {
        Self::default()
    }

    fn from_seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Self::default())
    }

    fn from_map<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Self::default())
    }
}

struct LeafVisitor<T>(PhantomData<T>);

impl<'de, T: Leaf<'de>> Visitor<'de> for LeafVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<T, E> {
        Ok(T::from_bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<T, E> {
        Ok(T::from_number(v as f64))
    }

    fn visit_u64<E>(self, v: u64) -> Result<T, E> {
        Ok(T::from_number(v as f64))
    }

    fn visit_f64<E>(self, v: f64) -> Result<T, E> {
        Ok(T::from_number(v))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<T, E> {
        Ok(T::from_borrowed_str(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<T, E> {
        Ok(T::from_str(v))
    }

    fn visit_unit<E>(self) -> Result<T, E> {
        Ok(T::default())
    }

    fn visit_none<E>(self) -> Result<T, E> {
        Ok(T::default())
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<T, A::Error> {
        T::from_seq(seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::from_map(map)
    }
}

/// `Deserialize` for a `Leaf`: any JSON value, read leniently.
macro_rules! deserialize_leaf {
    ($ty:ty, $($generics:tt)*) => {
        impl<$($generics)*> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_any(LeafVisitor(PhantomData))
            }
        }
    };
}

impl<'de: 'a, 'a> Leaf<'de> for Text<'a> {
    fn from_borrowed_str(text: &'de str) -> Self {
        Text(Some(Cow::Borrowed(text)))
    }

    fn from_str(text: &str) -> Self {
        Text(Some(Cow::Owned(text.to_owned())))
    }
}
deserialize_leaf!(Text<'a>, 'de: 'a, 'a);

impl Leaf<'_> for Num {
    fn from_number(n: f64) -> Self {
        Num(Some(n))
    }
}
deserialize_leaf!(Num, 'de);

impl Leaf<'_> for Flag {
    fn from_bool(b: bool) -> Self {
        Flag(Some(b))
    }
}
deserialize_leaf!(Flag, 'de);

impl<'de, T: Deserialize<'de> + Default> Leaf<'de> for Obj<T> {
    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map)).map(Obj)
    }
}
deserialize_leaf!(Obj<T>, 'de, T: Deserialize<'de> + Default);

impl<'de, T: Deserialize<'de> + Default> Leaf<'de> for List<T> {
    fn from_seq<A: SeqAccess<'de>>(seq: A) -> Result<Self, A::Error> {
        T::deserialize(SeqAccessDeserializer::new(seq)).map(List)
    }
}
deserialize_leaf!(List<T>, 'de, T: Deserialize<'de> + Default);

impl<'de: 'a, 'a> Leaf<'de> for Blocks<'a> {
    fn from_borrowed_str(text: &'de str) -> Self {
        Blocks(vec![text_block(Cow::Borrowed(text))])
    }

    fn from_str(text: &str) -> Self {
        Blocks(vec![text_block(Cow::Owned(text.to_owned()))])
    }

    fn from_seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        let mut blocks = Vec::new();
        while let Some(Obj(block)) = seq.next_element::<Obj<Block<'a>>>()? {
            blocks.push(block);
        }
        Ok(Blocks(blocks))
    }
}
deserialize_leaf!(Blocks<'a>, 'de: 'a, 'a);

fn text_block(text: Cow<'_, str>) -> Block<'_> {
    Block {
        kind: Text(Some(Cow::Borrowed("text"))),
        text: Text(Some(text)),
        ..Block::default()
    }
}

/// An item of a tool result's content list: only its text is read.
#[derive(Default, Deserialize)]
#[serde(default)]
struct ResultItem<'a> {
    #[serde(borrow)]
    text: Text<'a>,
}

impl<'de: 'a, 'a> Leaf<'de> for ResultText<'a> {
    fn from_borrowed_str(text: &'de str) -> Self {
        ResultText(Some(Cow::Borrowed(text)))
    }

    fn from_str(text: &str) -> Self {
        ResultText(Some(Cow::Owned(text.to_owned())))
    }

    fn from_seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        let mut first = None;
        while let Some(Obj(item)) = seq.next_element::<Obj<ResultItem<'a>>>()? {
            first = first.or(item.text.0);
        }
        Ok(ResultText(first))
    }
}
deserialize_leaf!(ResultText<'a>, 'de: 'a, 'a);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_of_another_type_read_as_absent_and_the_line_still_parses() {
        let line = br#"{"type":"result","is_error":"yes","num_turns":"7","result":{"x":[1]},
            "usage":[1,2],"modelUsage":"none","errors":{"a":1},"total_cost_usd":0.5,
            "api_error_status":null,"message":{"content":"plain","usage":{"input_tokens":-3}}}"#;
        let event: EventLine = serde_json::from_slice(line).unwrap();
        assert!(event.kind.is("result"));
        assert_eq!(event.is_error.0, None);
        assert_eq!(event.num_turns.0, None);
        assert_eq!(event.result.0, None);
        assert!(event.errors.0.is_empty());
        assert_eq!(event.total_cost_usd.0, Some(0.5));
        assert_eq!(event.message.0.content.0.len(), 1);
        assert_eq!(event.message.0.content.0[0].text.as_deref(), Some("plain"));
        assert_eq!(event.message.0.usage.0.input_tokens.count(), None);
    }

    #[test]
    fn tool_result_content_is_its_first_text() {
        let line = br#"{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"t",
            "content":[{"type":"image"},{"type":"text","text":"first\nsecond"},{"text":"third"}]}]}}"#;
        let event: EventLine = serde_json::from_slice(line).unwrap();
        let block = &event.message.0.content.0[0];
        assert_eq!(block.content.0.as_deref(), Some("first\nsecond"));
    }

    #[test]
    fn the_type_is_sniffed_only_from_the_clis_own_layout() {
        assert_eq!(sniff_kind(br#"{"type":"user","x":1}"#), Some(&b"user"[..]));
        assert_eq!(sniff_kind(br#"{ "type": "user"}"#), None);
        assert_eq!(sniff_kind(br#"{"type":"us"}"#), Some(&b"us"[..]));
        assert_eq!(sniff_kind(br#"{"type":"unterminated"#), None);
    }
}
