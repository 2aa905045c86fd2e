"""`probe report`: stored results as one file a person can read (HTML with figures, Markdown,
JSON). `gather` picks and scrubs the records, `build` makes the plain report model, `evidence`
orders a blocked target's evidence, `render` writes the formats, `plots` draws the figures
(the only module that imports matplotlib, on first use)."""
