"""The nodes of a step: route, supervise, work; each a function of the step context."""
