-- Scoped access (`store::accounts::Scope`, JSON): the products, groups and channels an
-- account sees and acts on; NULL: the whole fleet.
ALTER TABLE users ADD COLUMN scope TEXT;
