"""A scripted fake model provider speaking the Anthropic, OpenAI (Responses and Chat) and Gemini
wire APIs, for tests and offline demos of the coding-agent CLIs. See docs/fake-provider.md.
"""

from fake_provider.app import FakeProvider, create_app
from fake_provider.ledger import Ledger, LedgerEntry, key_id
from fake_provider.script import (
    FILE_CONTENT,
    TEXT,
    DefaultScript,
    Failure,
    ModelRequest,
    Reply,
    Script,
    ToolCall,
    ToolSpec,
)
from fake_provider.testing import RunningProvider, serve_in_thread
from fake_provider.usage import AUX, FIXED, ZERO, Usage

__all__ = [
    "AUX",
    "FILE_CONTENT",
    "FIXED",
    "TEXT",
    "ZERO",
    "DefaultScript",
    "Failure",
    "FakeProvider",
    "Ledger",
    "LedgerEntry",
    "ModelRequest",
    "Reply",
    "RunningProvider",
    "Script",
    "ToolCall",
    "ToolSpec",
    "Usage",
    "create_app",
    "key_id",
    "serve_in_thread",
]
