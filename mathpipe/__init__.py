"""mathpipe: the library behind the DVC stages (config, data, prompts, answers, models, generation)."""
