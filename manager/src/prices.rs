//! What an agent's tokens cost: a price table per model (config `[prices]`
//! over built-in defaults for the current Claude models) and the cost of a
//! run, the agent's own figure when it reported one, else its tokens
//! priced with the table. A pure function of its inputs, like `schedule`.
//!
//! A model matches the longest table key that is a prefix of its name once
//! a context suffix such as `[1m]` is stripped: `claude-opus-4-8[1m]` and
//! `claude-opus-4-8-20260101` both match `claude-opus-4-8`. A model the
//! table does not know costs nothing (its tokens are still counted).

use aam_protocol::agent_run::{AgentRun, ModelPrice, TokenUsage};
use std::collections::BTreeMap;

/// Built-in prices, USD per million tokens: Anthropic's list prices
/// (https://platform.claude.com/docs/en/about-claude/pricing, "Model
/// pricing"). Cache writes are the 5-minute rate (1.25 × input), the one
/// Claude Code's usage figures do not tell apart from the 1-hour one.
pub const DEFAULT_PRICES: &[(&str, ModelPrice)] = &[
    // Opus 4 and 4.1 (and any later 4.x not listed below).
    ("claude-opus-4", price(15.0, 75.0, 1.5, 18.75)),
    ("claude-opus-4-5", price(5.0, 25.0, 0.5, 6.25)),
    ("claude-opus-4-6", price(5.0, 25.0, 0.5, 6.25)),
    ("claude-opus-4-7", price(5.0, 25.0, 0.5, 6.25)),
    ("claude-opus-4-8", price(5.0, 25.0, 0.5, 6.25)),
    // Sonnet 4, 4.5 and 4.6.
    ("claude-sonnet-4", price(3.0, 15.0, 0.3, 3.75)),
    // Haiku 4.5.
    ("claude-haiku-4", price(1.0, 5.0, 0.1, 1.25)),
];

const fn price(input: f64, output: f64, cache_read: f64, cache_write: f64) -> ModelPrice {
    ModelPrice {
        input,
        output,
        cache_read,
        cache_write,
    }
}

/// Prices by model-name prefix.
#[derive(Clone, Debug, PartialEq)]
pub struct PriceTable {
    /// Longest key first, so the first prefix that matches is the longest.
    entries: Vec<(String, ModelPrice)>,
}

impl Default for PriceTable {
    fn default() -> Self {
        PriceTable::with(&BTreeMap::new())
    }
}

impl PriceTable {
    /// The built-in prices with `configured` laid over them (a configured
    /// model replaces the built-in one of the same name).
    pub fn with(configured: &BTreeMap<String, ModelPrice>) -> PriceTable {
        let mut all: BTreeMap<String, ModelPrice> = DEFAULT_PRICES
            .iter()
            .map(|(name, p)| (name.to_string(), *p))
            .collect();
        all.extend(configured.iter().map(|(k, v)| (k.clone(), *v)));
        let mut entries: Vec<(String, ModelPrice)> = all.into_iter().collect();
        entries.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        PriceTable { entries }
    }

    /// The price of `model`'s tokens, if the table knows it.
    pub fn of(&self, model: &str) -> Option<ModelPrice> {
        let name = match model.find('[') {
            Some(at) => &model[..at],
            None => model,
        };
        self.entries
            .iter()
            .find(|(prefix, _)| name.starts_with(prefix.as_str()))
            .map(|(_, p)| *p)
    }

    /// What `usage` of `model` costs, in USD (nothing for an unknown model).
    pub fn cost(&self, model: &str, usage: &TokenUsage) -> f64 {
        let Some(p) = self.of(model) else {
            return 0.0;
        };
        let per_million = usage.input_tokens as f64 * p.input
            + usage.output_tokens as f64 * p.output
            + usage.cache_read_tokens as f64 * p.cache_read
            + usage.cache_creation_tokens as f64 * p.cache_write;
        per_million / 1_000_000.0
    }

    /// What a run cost: the agent's own figure when it reported one, else
    /// its messages' tokens priced per model.
    pub fn run_cost(&self, run: &AgentRun) -> f64 {
        if let Some(reported) = run.reported_cost_usd.filter(|c| c.is_finite() && *c >= 0.0) {
            return reported;
        }
        run.usage
            .iter()
            .map(|(model, usage)| self.cost(model, usage))
            .sum()
    }
}

/// An amount in USD as people read it: cents, or four decimals below 10 cents.
pub fn usd(amount: f64) -> String {
    if amount.abs() >= 0.1 {
        format!("${amount:.2}")
    } else {
        format!("${amount:.4}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(input: u64, output: u64, read: u64, write: u64) -> TokenUsage {
        TokenUsage {
            input_tokens: input,
            output_tokens: output,
            cache_read_tokens: read,
            cache_creation_tokens: write,
        }
    }

    #[test]
    fn the_longest_prefix_wins_and_a_context_suffix_is_ignored() {
        let table = PriceTable::default();
        assert_eq!(table.of("claude-opus-4-8[1m]").unwrap().input, 5.0);
        assert_eq!(table.of("claude-opus-4-5-20251101").unwrap().input, 5.0);
        assert_eq!(table.of("claude-opus-4-1-20250805").unwrap().input, 15.0);
        assert_eq!(table.of("claude-sonnet-4-6").unwrap().output, 15.0);
        assert_eq!(
            table.of("claude-haiku-4-5-20251001").unwrap().cache_read,
            0.1
        );
        assert_eq!(table.of("gpt-5"), None);
    }

    #[test]
    fn configured_prices_replace_and_extend_the_defaults() {
        let mine = BTreeMap::from([
            ("claude-sonnet-4".to_string(), price(1.0, 2.0, 0.0, 0.0)),
            ("gpt-5".to_string(), price(1.25, 10.0, 0.125, 0.0)),
        ]);
        let table = PriceTable::with(&mine);
        assert_eq!(table.of("claude-sonnet-4-5").unwrap().output, 2.0);
        assert_eq!(table.of("gpt-5-codex").unwrap().output, 10.0);
        assert_eq!(table.of("claude-opus-4-8").unwrap().input, 5.0);
    }

    #[test]
    fn a_run_costs_what_its_agent_reported_else_its_tokens_priced() {
        let table = PriceTable::default();
        // The recorded one-turn answer: 10 in, 5 out, $0.000175 reported.
        let mut run = AgentRun::default();
        run.usage
            .insert("claude-opus-4-8".into(), tokens(10, 5, 0, 0));
        assert!((table.run_cost(&run) - 0.000175).abs() < 1e-12);
        run.usage.insert(
            "claude-haiku-4-5".into(),
            tokens(0, 0, 1_000_000, 1_000_000),
        );
        assert!((table.run_cost(&run) - (0.000175 + 0.1 + 1.25)).abs() < 1e-9);
        run.reported_cost_usd = Some(0.5);
        assert_eq!(table.run_cost(&run), 0.5);
        run.reported_cost_usd = Some(f64::NAN);
        assert!(
            table.run_cost(&run) > 1.0,
            "a figure that is no number is ignored"
        );
    }

    #[test]
    fn amounts_read_as_cents_or_four_decimals() {
        assert_eq!(usd(1.234), "$1.23");
        assert_eq!(usd(0.000175), "$0.0002");
        assert_eq!(usd(0.5), "$0.50");
    }
}
