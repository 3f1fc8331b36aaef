*p
Ab3dE0{"crv":"P-256","kty":"EC","x":"AAAA","y":"BBBB"}tp-1"mailto:ops@example.internal(2
kid-fuzz-18€÷ÄÕ