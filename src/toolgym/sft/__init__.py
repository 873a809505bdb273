"""Cold-start supervised fine-tuning: environment-grounded data and a trainer for any causal LM."""
