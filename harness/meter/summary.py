"""A job's summary once its calls were metered: the usage is what the provider billed (the sum
over the calls), the CLI's own report is kept beside it, and a flag says where they differ.

The model is the CLI's report, else what the provider answered the job's last call with.
Cost follows the metered usage when the runtime has prices; otherwise the CLI's own reported
cost stays (it is the only price known), and its source says so.
"""

from __future__ import annotations

from collections.abc import Sequence

from eventing.agent_events import RunSummary, Usage
from eventing.model_calls import ModelCall, metered_total
from harness.adapters.base import Prices, estimate_cost


def metered_summary(
    summary: RunSummary, calls: Sequence[ModelCall], prices: Prices | None
) -> RunSummary:
    metered = metered_total(calls)
    cli_usage: Usage = summary.usage
    update: dict[str, object] = {
        "usage": metered,
        "cli_usage": cli_usage,
        "usage_source": "metered",
        "usage_mismatch": metered != cli_usage,
    }
    if summary.model is None:
        # The CLI named none (codex, opencode): the provider's answer to its last call did.
        answered = [call.model for call in calls if call.outcome == "ok" and call.model]
        if answered:
            update["model"] = answered[-1]
    if prices is not None:
        update["cost_usd"] = estimate_cost(metered, prices)
        update["cost_source"] = "estimated"
    return summary.model_copy(update=update)
