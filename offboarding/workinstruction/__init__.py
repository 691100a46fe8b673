"""The work instruction ("werkinstructie uitdiensttreding"), generated from the configuration
the service runs: what management hands an auditor is what the code executes.

`document.build` reads the settings into a `WorkInstruction`; `render.render` writes it as
Markdown, self-contained HTML or PDF, in Dutch or English.
"""
