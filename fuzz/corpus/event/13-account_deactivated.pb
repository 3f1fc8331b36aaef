:
Ab3dE