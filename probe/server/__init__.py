"""The helper server (`probe serve`): control measurements from outside the censored network."""
