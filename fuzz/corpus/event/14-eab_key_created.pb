zA

kid-fuzz-1team a.example.internal"
10.0.0.0/8*server0€÷ÄÕ