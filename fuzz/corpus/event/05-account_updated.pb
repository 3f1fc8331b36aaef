b
Ab3dE