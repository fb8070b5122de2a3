"""Tools the model can call: the Tool interface, ToolRegistry and web search (never imports engine/)."""
