"""Simulated web servers writing log files, and the agent that ships them to Kinesis and Firehose.

Verbs: :func:`ship_dataset` (servers + agent in one call, what notebooks use), :func:`simulate_servers`,
:func:`load_config`, :class:`Agent`. CLI: ``shoplake simulate-servers``, ``shoplake agent run|status|stop``.
"""

from shoplake.agent._agent import Agent, AgentError, default_state_dir
from shoplake.agent._flows import load_config
from shoplake.agent._servers import order_line_csv, simulate_servers
from shoplake.agent._ship import ship_dataset

__all__ = [
    "Agent",
    "AgentError",
    "default_state_dir",
    "load_config",
    "order_line_csv",
    "ship_dataset",
    "simulate_servers",
]
