"""MCP in both directions (docs/mcp.md).

- MCP servers as sandboxed agents (``servers``): each server a manifest declares runs as a
  sandboxed agent of the kernel's, spoken to over stdio with the official ``mcp`` SDK (the
  ``agentos[mcp]`` extra), imported only when a server is configured.
- Tool routing (``routing``): THINK with ``tools: "mcp"`` runs the tool loop inside the kernel,
  within the agent's allowlist (``policy``), with human approval where asked (``approvals``).
- agentos as an MCP server: ``server*`` modules (``agentos mcp``).
"""
