"""The web console: static pages served at `/ui` that call the public API from the browser
(docs/console.md)."""
