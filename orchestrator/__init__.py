"""The neutral core: teams, router, supervisor engine, guards, budgets, LLM gateway, store."""

import os

# litellm reads these at import, and fetches its price map over the network unless told
# otherwise; set them before any module of the core can import litellm.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_LOG", "ERROR")
