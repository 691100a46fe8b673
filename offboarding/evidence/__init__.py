"""The evidence pack of one finished offboarding case: everything the database and the
hash-chained audit log hold about it (`pack.gather`), rendered as a self-contained HTML
page, a PDF or Markdown, in Dutch or English (`render`)."""
