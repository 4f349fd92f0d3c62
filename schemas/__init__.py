"""Records, LLM answer models and table schemas shared by every stage."""
