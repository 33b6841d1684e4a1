"""The guest side: agent calls, installing the agent, deploying the agent ISO into pools."""
