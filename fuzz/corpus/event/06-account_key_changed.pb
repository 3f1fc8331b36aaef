2
Ab3dE{}tp-1"tp-2