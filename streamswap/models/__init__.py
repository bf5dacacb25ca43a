"""The catalogue of every supported model (role, file, URLs, SHA-256, size, licence, I/O
contract) and the code that fetches, converts and verifies the files. A built-in entry
(the mesh swapper) is code with no file: always available, nothing to fetch or verify.

May import: `inference` (loading a file to check its contract), `errors`, `files`, `logs`,
`redact`, `typedconfig`. Never `faces`, `io`, `pipeline` or `service`.
"""
