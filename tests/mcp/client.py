"""A real MCP client for the integration tests: the official MCP Python SDK
(tests/mcp/requirements.txt) spawns `aam mcp` over stdio and keeps one MCP
session open while the Rust test (aam_tests::mcp::McpClient) drives it.

Usage: client.py AAM_BINARY. The server's environment is this process's
AAM_MANAGER, AAM_TOKEN, AAM_CA and AAM_LOG (the SDK passes only a safe subset of
the environment, so they are passed explicitly). One JSON request per line
on stdin, one JSON answer per line on stdout:
  {"op": "list_tools"} -> {"tools": [{"name", "description", "input_schema"}]}
  {"op": "call", "tool": NAME, "arguments": {...}}
      -> {"is_error": bool, "text": [str, ...], "structured": value or null}
  a failure of the client itself -> {"exception": "Type: message"}
First line out: {"ready": true, "server": NAME} once the handshake is done.
"""

import json
import os
import sys

import anyio
from mcp import Client, StdioServerParameters


def reply(value):
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()


async def answer(client, request):
    if request["op"] == "list_tools":
        listed = await client.list_tools()
        return {
            "tools": [
                {
                    "name": tool.name,
                    "description": tool.description,
                    "input_schema": tool.input_schema,
                }
                for tool in listed.tools
            ]
        }
    if request["op"] == "call":
        result = await client.call_tool(request["tool"], request.get("arguments") or {})
        return {
            "is_error": bool(result.is_error),
            "text": [c.text for c in result.content if getattr(c, "type", None) == "text"],
            "structured": result.structured_content,
        }
    return {"exception": f"unknown op {request['op']!r}"}


async def main():
    env = {k: os.environ[k] for k in ("AAM_MANAGER", "AAM_TOKEN", "AAM_CA", "AAM_LOG") if k in os.environ}
    server = StdioServerParameters(command=sys.argv[1], args=["mcp"], env=env, cwd=os.getcwd())
    async with Client(server) as client:
        info = client.server_info if hasattr(client, "server_info") else None
        reply({"ready": True, "server": getattr(info, "name", None)})
        while True:
            line = await anyio.to_thread.run_sync(sys.stdin.readline)
            if not line:
                return
            try:
                reply(await answer(client, json.loads(line)))
            except Exception as e:  # the test reads it; the session goes on
                reply({"exception": f"{type(e).__name__}: {e}"})


if __name__ == "__main__":
    anyio.run(main)
