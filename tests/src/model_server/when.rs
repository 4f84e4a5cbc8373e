//! Which requests a rule answers: [`When`] and its matchers.

use super::Request;
use std::sync::Arc;
use std::time::SystemTime;

type Matcher = Arc<dyn Fn(&Request) -> bool + Send + Sync>;

/// Which requests a rule answers.
#[derive(Clone)]
pub struct When(Matcher);

impl When {
    /// Every request.
    pub fn any() -> When {
        When::custom(|_| true)
    }

    /// A request that goes on after a tool call (its last user message
    /// holds a `tool_result`).
    pub fn tool_result() -> When {
        When::custom(Request::has_tool_result)
    }

    /// A request that does not follow a tool call: a prompt's first turn.
    pub fn first_turn() -> When {
        When::custom(|r| !r.has_tool_result())
    }

    /// The last prompt a user wrote contains `text`.
    pub fn prompt_contains(text: &str) -> When {
        let text = text.to_string();
        When::custom(move |r| r.last_prompt().is_some_and(|p| p.contains(&text)))
    }

    /// Requests received before `deadline` (e.g. a limit's reset time).
    pub fn before(deadline: SystemTime) -> When {
        When::custom(move |_| SystemTime::now() < deadline)
    }

    /// Both conditions hold.
    pub fn and(self, other: When) -> When {
        When::custom(move |r| (self.0)(r) && (other.0)(r))
    }

    pub fn custom(f: impl Fn(&Request) -> bool + Send + Sync + 'static) -> When {
        When(Arc::new(f))
    }

    /// Whether this rule answers `request`.
    pub(super) fn matches(&self, request: &Request) -> bool {
        (self.0)(request)
    }
}
