"""The client configurations ``codebase-mcp setup`` prints, and the README's, parse as their clients read them."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path

from server.setup import SERVER_NAME, client_configs

README = Path(__file__).resolve().parents[2] / "README.md"
COMMAND = "/opt/code base/.venv/bin/codebase-mcp"  # a space, so quoting is exercised
ENV = {"CODEBASE_MCP_EMBEDDER": "ollama", "CODEBASE_MCP_OLLAMA_MODEL": 'nomic "embed" text'}


def test_stdio_configurations_carry_the_command_and_settings() -> None:
    configs = client_configs(COMMAND, ENV, "http://127.0.0.1:8765/mcp")
    cursor = json.loads(configs["cursor"])["mcpServers"][SERVER_NAME]
    assert cursor == {"command": COMMAND, "args": ["serve"], "env": ENV}
    vscode = json.loads(configs["vscode"])["servers"][SERVER_NAME]
    assert vscode == {"type": "stdio", "command": COMMAND, "args": ["serve"], "env": ENV}
    codex = tomllib.loads(configs["codex"])["mcp_servers"][SERVER_NAME]
    assert codex == {"command": COMMAND, "args": ["serve"], "env": ENV}
    words = shlex.split(configs["claude"])
    assert words[:4] == ["claude", "mcp", "add", "--scope"]
    assert words[words.index("--") :] == ["--", COMMAND, "serve"]
    assert [words[i + 1] for i, word in enumerate(words) if word == "-e"] == [f"{k}={v}" for k, v in ENV.items()]


def test_without_settings_no_env_is_written() -> None:
    configs = client_configs(COMMAND, {}, "http://127.0.0.1:8765/mcp")
    assert "env" not in json.loads(configs["cursor"])["mcpServers"][SERVER_NAME]
    assert "env" not in tomllib.loads(configs["codex"])["mcp_servers"][SERVER_NAME]
    assert " -e " not in configs["claude"]


def test_every_configuration_block_in_the_readme_section_parses() -> None:
    text = README.read_text()
    section = text.split("## Use it from your assistant", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(json|toml)\n(.*?)```", section, flags=re.DOTALL)
    assert {kind for kind, _ in blocks} == {"json", "toml"}, "the section shows JSON and TOML configurations"
    for kind, body in blocks:
        parsed = json.loads(body) if kind == "json" else tomllib.loads(body)
        assert parsed, body
