)
A „ЛХ"acme:acct:Ab3dE(РэЗХ